// Node entry of a device-test worker thread: let Node load TypeScript (tsx), then run the hammer module.
import { register } from 'tsx/esm/api';

register();
await import('./device-hammer.ts');
