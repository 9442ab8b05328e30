"""Generation: decoding helpers, `generate()` over files with resume, and chat sessions."""
