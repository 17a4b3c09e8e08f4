// The socket protocol, from the same .proto the servers are built from.
import protobuf from 'protobufjs';
import connectProto from '../../proto/gim/connect/v1/connect.proto';

const root = protobuf.parse(connectProto, { keepCase: true }).root;
const t = (name) => root.lookupType(`gim.connect.v1.${name}`);

export const Input = t('Input');
export const Output = t('Output');
export const SignInInput = t('SignInInput');
export const SyncInput = t('SyncInput');
export const SyncOutput = t('SyncOutput');
export const MessageACK = t('MessageACK');
export const Message = t('Message');
export const SendMessageInput = t('SendMessageInput');
export const SendMessageOutput = t('SendMessageOutput');
export const ReconnectNotice = t('ReconnectNotice');
export const KickNotice = t('KickNotice');

export const PackageType = {
  SIGN_IN: 1, SYNC: 2, HEARTBEAT: 3, MESSAGE: 4, SEND_MESSAGE: 5, RECONNECT: 6, GROUP_SYNC: 7, KICKED: 8,
};
export const ReceiverType = { USER: 1, NORMAL_GROUP: 2, LARGE_GROUP: 3 };

// 64-bit ids travel as decimal strings in the page: JS numbers lose precision above 2^53.
const TO_OBJECT = { longs: String, enums: Number, defaults: true };

export function encode(type, obj) {
  return type.encode(type.fromObject(obj)).finish();
}

export function decode(type, bytes) {
  return type.toObject(type.decode(bytes), TO_OBJECT);
}
