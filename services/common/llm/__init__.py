"""LLM access for every role: the openai client wrapper, the scripted server, the local model."""
