/** @noSelfInFile */
// Transitional alias of store/dict (removed by the structure change).
export { dict as shm, resetDict as resetShm } from "./dict";
