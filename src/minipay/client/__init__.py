"""minipay.client (see the README)."""
