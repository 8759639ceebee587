"""The rubric judge: PaperBench's leaf-by-leaf protocol, submissions, JudgeEval metrics."""
