"""Built-in recognizers: patterns for identifiers, dictionaries and context for names, places and addresses."""
