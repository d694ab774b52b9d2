"""The jobs the pipeline's rules call: each module has add_arguments(parser) and run(args) -> int."""
