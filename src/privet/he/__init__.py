"""Homomorphic encryption: CKKS (TenSEAL) vectors that a server adds without the key (:mod:`privet.he.ckks`)."""
