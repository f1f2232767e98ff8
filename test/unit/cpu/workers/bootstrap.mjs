// Node entry of a hart-test worker thread: let Node load TypeScript (tsx), then run the hart module.
import { register } from 'tsx/esm/api';

register();
await import('./litmus-hart.ts');
