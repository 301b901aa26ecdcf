"""`python -m lora_core.replay`: the research replays' command line. The code lives in lora_core/research/."""
