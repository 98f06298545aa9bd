"""Desensitization: find personal data in text and transform it (mask, pseudonymize, encrypt, tokenize)."""
