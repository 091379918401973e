"""What both ends of a link share: dialects, the message codec, framing,
money and redacted traces. Imports nothing else of possim."""
