# pipe's model-gateway relay, run inside a build's sandbox: listens on a loopback port of the
# sandbox's own network and passes every connection, byte for byte, to the gateway's unix socket
# bound in from the host. The port is written to PORTFILE (atomically) once it listens.
# usage: python3 -I relay.py SOCKET PORTFILE
import asyncio
import os
import sys


async def pump(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except (ConnectionError, OSError):
            pass


async def main(socket_path, port_file):
    async def handle(client_reader, client_writer):
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(socket_path)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pump(client_reader, up_writer), pump(up_reader, client_writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.replace(tmp, port_file)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
