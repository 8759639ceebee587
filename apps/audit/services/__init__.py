"""Judge audit services by noun: trees, submissions, cells, comparison, exports, grading,
judge_eval_import, queues, report, what_if."""
