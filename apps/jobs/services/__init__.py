"""Job services by noun: ``launching`` (configs, launch), ``pipelines`` (stages run in order),
``control`` (cancel, retry), ``checkpoints`` (a checkpoint as a model endpoint), ``orphans`` (jobs
whose worker died), ``dispatch`` (a job's task sent to its queue by name). The pages, the API,
other apps and the worker call these."""
