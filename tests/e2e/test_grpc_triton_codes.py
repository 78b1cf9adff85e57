"""gRPC codes and checks as Triton's (issue 16): a request carrying its data
both as `contents` and as `raw_input_contents` is INVALID_ARGUMENT, and a
message over the size limit is RESOURCE_EXHAUSTED, on the node's gRPC port
and on the gateway's."""

import grpc
import numpy as np
import pytest

from topology import GatewayProcess


def port_of(server, name):
    """The node's gRPC port, or the gateway's of the same process."""
    if name == "grpc":
        return server.grpc_port
    return GatewayProcess.gateway_ports(server)["grpc"]


def grpc_stub(port):
    from tritonclient.grpc import service_pb2_grpc
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[
        ("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)])
    return channel, service_pb2_grpc.GRPCInferenceServiceStub(channel)


def identity_request(values):
    from tritonclient.grpc import service_pb2
    request = service_pb2.ModelInferRequest(model_name="identity_fp32")
    tensor = request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, len(values)])
    request.raw_input_contents.append(np.asarray(values, np.float32).tobytes())
    return request, tensor


@pytest.mark.parametrize("port_name", ["grpc", "gateway-grpc"])
def test_grpc_refuses_contents_and_raw_contents_together(server, port_name):
    channel, stub = grpc_stub(port_of(server, port_name))
    with channel:
        request, tensor = identity_request([1.0, 2.0])
        assert stub.ModelInfer(request, timeout=60).raw_output_contents
        tensor.contents.fp32_contents.extend([1.0, 2.0])
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelInfer(request, timeout=60)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
    assert "raw_input_contents" in e.value.details()


@pytest.fixture(scope="module")
def small_limit_server(models_repo):
    from server import start_server
    s = start_server(models_repo, env={"MLSERVE_SERVER__HTTP_MAX_BODY_BYTES": str(64 * 1024)})
    yield s
    s.stop()


@pytest.mark.parametrize("port_name", ["grpc", "gateway-grpc"])
def test_an_oversized_grpc_message_is_resource_exhausted(small_limit_server, port_name):
    channel, stub = grpc_stub(port_of(small_limit_server, port_name))
    with channel:
        request, _ = identity_request(np.zeros(64 * 1024))  # 256 KiB > 64 KiB
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelInfer(request, timeout=60)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value
        # and the server serves the next, small, request
        request, _ = identity_request([1.0])
        assert stub.ModelInfer(request, timeout=60).raw_output_contents
