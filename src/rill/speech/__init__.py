"""Speech output: the answer's text spoken by a local text-to-speech engine (Piper), sentence by
sentence, encoded as the request's `audio.format`. Synchronous and free of HTTP; api/protocols/chat/audio.py
runs it next to a streaming answer."""
