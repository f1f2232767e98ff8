// Node entry of a vCPU worker thread: let Node load TypeScript (tsx), then run the same worker module the
// browser uses. workerData = { init: HartThreadInit }.
import { register } from 'tsx/esm/api';

register();
await import('../machine/hart.worker.ts');
