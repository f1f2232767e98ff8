/**
 * The storage worker: a thin shell around {@link OpfsDiskServer} (sync access handles exist only in dedicated
 * workers). Created by `OpfsDiskStore`; its messages are the protocol in `storage-protocol.ts`.
 */
import { OpfsDiskServer } from './opfs-disk-server.ts';

const scope = self as unknown as {
  postMessage(message: unknown, transfer: Transferable[]): void;
  addEventListener(type: 'message', listener: (event: MessageEvent) => void): void;
};
const server = new OpfsDiskServer((response, transfer) => scope.postMessage(response, transfer));
scope.addEventListener('message', (event) => server.receive(event.data));
