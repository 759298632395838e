"""Web search for `web_search_options`: providers (SearxNG-compatible JSON, Brave, Tavily) behind one
small interface, and the pure parts: what goes into the model's context, and which sources the
answer cites."""
