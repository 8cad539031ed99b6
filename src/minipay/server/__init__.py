"""minipay.server (see the README)."""
