"""Pure translators between an inbound API and the chat-completions pivot, one module per pair."""
