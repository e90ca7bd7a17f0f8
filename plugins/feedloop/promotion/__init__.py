"""From candidate to live: the promotion steps, the gate, the model registry and the live pointer."""
