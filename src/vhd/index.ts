/**
 * The VHD engine: codecs (footer, header, parent locators, BAT, bitmaps), the streaming parser of XAPI
 * exports, VhdFile / VhdDirectory writers as sinks, chains (open, read, raw and flattened streams, check)
 * and merge. No dependency on the queue or XAPI: everything here runs in a worker thread as well.
 * See docs/vhd.md.
 */
export * from './constants.js'
export { corrupt, unsupported, type VhdStructure } from './corrupt.js'
export { vhdChecksum } from './checksum.js'
export { decodeFooter, encodeFooter, createFooter, computeGeometry, vhdTimestamp, type VhdFooter, type DiskGeometry } from './footer.js'
export { decodeHeader, encodeHeader, createHeader, decodeLocatorData, emptyLocator, type VhdHeader, type ParentLocatorEntry } from './header.js'
export { decodeBat, encodeBat, planLayout, encodeDirectoryBat, directoryBatHas, type LayoutItem } from './bat.js'
export { sectorIsSet, setSector, fullBitmap, bitmapIsFull, bitmapIsEmpty } from './bitmap.js'
export { openVhdStream, type VhdStream, type VhdBlock, type OpenVhdStreamOptions, type ParentLocatorData } from './stream-parser.js'
export { pumpVhd, type VhdSink, type VhdSinkResult, type VhdParentRef, type PumpResult } from './sink.js'
export { createVhdFileSink, type VhdFileSinkOptions } from './file-sink.js'
export { createVhdDirectorySink, defaultDataPath, blockPath, type VhdDirectorySinkOptions } from './directory-sink.js'
export { compressChunk, decompressChunk, sampledEntropy, parseChunkFilters, CHUNK_COMPRESSIONS, type ChunkCompression } from './compression.js'
export { openVhd, openVhdFile, openVhdDirectory, resolveAlias, isAlias, parentPathOf, type VhdReader } from './open.js'
export { openChain, checkChain, VhdChain, type ChainReport } from './chain.js'
export { mergeVhd, mergeStatePath, type MergeOptions, type MergeResult } from './merge.js'
