import * as http from 'http';
import { AddressInfo } from 'net';

/** Listen on 127.0.0.1 port 0 (or `port`) and return the port. */
export function listenLoopback(srv: http.Server, port = 0): Promise<number> {
  return new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(port, '127.0.0.1', () => {
      srv.off('error', reject);
      resolve((srv.address() as AddressInfo).port);
    });
  });
}

/** Close a server and every connection it holds open (keep-alive or in flight). Idempotent. */
export function closeServer(srv: http.Server): Promise<void> {
  return new Promise((resolve) => {
    if (!srv.listening) {
      srv.closeAllConnections();
      resolve();
      return;
    }
    srv.close(() => resolve());
    srv.closeAllConnections();
  });
}
