"""The trainable U-Net: network, checkpoint sidecar, training loop."""
