"""DeepLab models: v1 (VGG16 stride 8, DeepLab / LargeFOV), v2 (ASPP), v3 and v3+ (ResNet)."""
