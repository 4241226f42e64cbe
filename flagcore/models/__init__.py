"""Models: FLAG-TRADER on peft LoRA, checkpoint formats and import, batched inference, CGDT."""
