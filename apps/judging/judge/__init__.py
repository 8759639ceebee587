"""The judge protocol (PaperBench's): prompts, file ranking, answer parsing, grading a tree leaf by
leaf, graded trees and JudgeEval metrics. No Django: the judge engine, the web views, the JudgeEval
command and the benchmarks call the same functions."""
