import { CONTENT_TOPIC, EVENTS_TOPIC } from '../../kafka/client.js';
import { decodeNativeContent, decodeNativeEvent } from './native-format.js';
import type { WireFormat } from './records.js';

/** The topics `capture --to-kafka` writes. */
export const nativeFormat: WireFormat = {
  name: 'native',
  eventsTopic: EVENTS_TOPIC,
  contentTopic: CONTENT_TOPIC,
  decodeEvent: (_key, value) => decodeNativeEvent(value),
  decodeContent: (key, value) => decodeNativeContent(key, value),
};
