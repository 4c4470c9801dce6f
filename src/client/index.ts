/**
 * `cachesync/client`: what an application imports to read through the cache without racing the
 * cachesync consumers.
 */
export { CacheAside, MISS_MARKER } from './cache-aside.js';
export type { CacheAsideEvents, CacheAsideOptions, Loader } from './cache-aside.js';
