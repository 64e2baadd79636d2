import asyncio


async def test_runs_on_both_loop_flavors(request):
    loop = asyncio.get_running_loop()
    flavor = request.node.callspec.id
    assert flavor in {"asyncio", "uvloop"}
    assert (type(loop).__module__.startswith("uvloop")) == (flavor == "uvloop")
