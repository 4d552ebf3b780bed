"""The phases a pass through the engine can be in: a layer policy (gated skipping) measures at prefill and skips
at decode; verification scores drafted tokens."""
PREFILL, DECODE, VERIFY = "prefill", "decode", "verify"
