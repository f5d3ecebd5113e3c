"""The IntelliOptics retraining worker: claims training jobs from the cloud, turns human
labels into a new primary + OODD model version with the training library, evaluates it
against the active version on the same images, and registers it in one upload."""
