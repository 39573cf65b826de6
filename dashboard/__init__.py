"""The live dashboard: reads metrics from Redis and draws them with Dash and plotly."""
