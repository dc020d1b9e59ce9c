"""Generated gRPC stubs (services.common.rpc.ise.v1); regenerate with scripts/gen_proto.py, never edit."""
