"""minipay.sandbox (see the README)."""
