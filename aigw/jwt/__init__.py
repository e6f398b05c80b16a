"""JSON Web Tokens: parsing, keys, signatures and claims, strict by construction."""
