"""Operations: media storage settings and artifact sync, Prometheus metrics, structured logs."""
