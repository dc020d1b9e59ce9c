"""``ise view``: browse a dataset in a local web page (index, pages, HTTP server, templates)."""
