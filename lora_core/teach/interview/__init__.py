"""Interview prep: a question bank as two tables (numeric.py: randomised numbers computed by lora_core;
concepts.py: model answers with live numbers), answer checking (answers.py), and the quiz (quiz.py)."""
