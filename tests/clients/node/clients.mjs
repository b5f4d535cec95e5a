// Real Node clients against a running gateway, one call per run:
//   node clients.mjs <case>   with GATEWAY_URL, CLIENT_KEY and USER_ID in the environment.
// Prints one JSON object: what the client returned ({text} or {object}).
import OpenAI from "openai";
import { createOpenAI } from "@ai-sdk/openai";
import { generateObject, generateText, streamText } from "ai";
import { z } from "zod";

const { GATEWAY_URL, CLIENT_KEY, USER_ID } = process.env;
const baseURL = `${GATEWAY_URL}/v1`;
const headers = { "X-User-Id": USER_ID };
const client = new OpenAI({ baseURL, apiKey: CLIENT_KEY, defaultHeaders: headers, maxRetries: 0 });
const provider = createOpenAI({ baseURL, apiKey: CLIENT_KEY, headers });

const cases = {
  async "openai-chat"() {
    const answer = await client.chat.completions.create({
      model: "support-bot", messages: [{ role: "system", content: "app prompt" }, { role: "user", content: "Hi" }],
    });
    return { text: answer.choices[0].message.content };
  },
  async "openai-responses"() {
    const answer = await client.responses.create({ model: "support-bot", instructions: "app prompt", input: "Hi" });
    return { text: answer.output_text };
  },
  async "openai-responses-stream"() {
    const stream = await client.responses.create({
      model: "support-bot", instructions: "app prompt", input: "Hi", stream: true,
    });
    let text = "";
    let completed = null;
    for await (const event of stream) {
      if (event.type === "response.output_text.delta") text += event.delta;
      // `output_text` is an SDK convenience of plain answers only: a streamed response has its output items.
      if (event.type === "response.completed") {
        completed = event.response.output.filter((item) => item.type === "message")
          .flatMap((item) => item.content).filter((part) => part.type === "output_text")
          .map((part) => part.text).join("");
      }
    }
    return { text, completed };
  },
  async "ai-chat-generate-text"() {
    const { text } = await generateText({ model: provider.chat("support-bot"), system: "app prompt", prompt: "Hi",
                                          maxRetries: 0 });
    return { text };
  },
  async "ai-generate-text"() {
    const { text } = await generateText({ model: provider("support-bot"), system: "app prompt", prompt: "Hi",
                                          maxRetries: 0 });
    return { text };
  },
  async "ai-stream-text"() {
    const result = streamText({ model: provider("support-bot"), system: "app prompt", prompt: "Hi", maxRetries: 0,
                                onError: ({ error }) => { throw error; } });
    let text = "";
    for await (const piece of result.textStream) text += piece;
    return { text };
  },
  async "ai-generate-object"() {
    const { object } = await generateObject({
      model: provider("support-bot"), system: "app prompt", prompt: "Where?", maxRetries: 0,
      schema: z.object({ city: z.string(), days: z.number().int() }),
    });
    return { object };
  },
};

const run = cases[process.argv[2]];
if (!run) {
  console.error(`unknown case ${process.argv[2]}; known: ${Object.keys(cases).join(", ")}`);
  process.exit(2);
}
try {
  console.log(JSON.stringify(await run()));
} catch (error) {
  console.error(error?.stack ?? String(error));
  process.exit(1);
}
