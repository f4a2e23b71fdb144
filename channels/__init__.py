"""Channel adapters: verify a request, normalize it to one inbound message, de-duplicate it and
signal-with-start the conversation; replies go out through `channels.outbound` adapters."""
