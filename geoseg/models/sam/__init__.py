"""Segment Anything: variants, weights, the batched encoder and the mask decoder."""
