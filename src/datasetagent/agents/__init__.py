"""The four agents: Demand Analysis, Image Processing, Data Label and Supervision."""
