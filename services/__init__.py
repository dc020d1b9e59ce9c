"""ISE-Trace: Intent -> Simulate -> Execute, as independent services over Kafka and gRPC."""
