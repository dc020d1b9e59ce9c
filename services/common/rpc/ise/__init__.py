"""Generated gRPC stubs (services.common.rpc.ise); regenerate with scripts/gen_proto.py, never edit."""
