"""One LightningModule per post-training strategy."""
