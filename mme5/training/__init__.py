"""Training: the LightningModule, the contrastive loss module, GradCache and the sharding strategies."""
