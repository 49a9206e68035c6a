"""langchain engine (being written)."""
