"""Samples that use Minipay from the outside, as an institution's developers would."""
