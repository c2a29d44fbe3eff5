// Network state of a Linux guest from its memory: namespaces, sockets, devices, and who owns each socket.
export type { NetKernel } from './context.js';
export { listNetNamespaces, type NetNamespace } from './netns.js';
export { listSockets, DEFAULT_MAX_SOCKETS, NETIDS, type SocketWalkOptions } from './sockets.js';
export type { NetId, Socket, SocketOwner } from './sock.js';
export { listNetDevices, type NetDevice } from './netdev.js';
export { flagNames, formatIPv6, formatMac, tcpStateName } from './names.js';
export { socketOwners, type OwnerKernel } from './owners.js';
