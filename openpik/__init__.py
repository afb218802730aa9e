"""The light contract both sides share: the Job and the settings. Never imports torch."""
