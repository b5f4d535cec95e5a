"""Pure translators between wire formats, one module per pair (inbound format → upstream format).

`messages_chat`: an Anthropic Messages call through the chat-completions pivot.
`responses_chat`: an OpenAI Responses call through the chat-completions pivot
(request → chat, chat answer and stream → Responses). `chat_responses`: a
chat-completions call to a provider whose wire is the Responses API (request
→ Responses, Responses answer and events → chat).
"""
