"""Token usage of a request: read from the backend's response (JSON or a stream), or counted.

Usage::

    usage, answer = usage_and_body("chat-completions", body, has_text=True)
    if usage is None and answer is not None:  # no usage: count the prompt and this
        completion_text("chat-completions", answer)  # with aigw.tokenizer

    reader = StreamUsage("chat-completions", strip_usage_chunk=True)  # per streamed response
    for chunk in backend_chunks:
        send(reader.feed(chunk))  # what the client gets (the usage-only event removed)
    send(reader.flush())          # at the end: an unterminated last event, if any
    reader.usage                  # the backend's Usage, or None: then count
    reader.completion_text()      # with aigw.tokenizer

`extract` reads the `usage` object in both shapes (Chat Completions / Completions /
Embeddings and the Responses API), `stream` reads server-sent events, `completion` reads a
JSON answer's completion text (what a stream's would be), and `model.Usage` is what
`extract` and `stream` return. Token limits and token metrics use the same numbers from here.
"""
