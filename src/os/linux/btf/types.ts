// BTF type records as vigil sees them: one decoded object per type id, shaped after
// include/uapi/linux/btf.h. Names are raw guest strings: sanitise before display.

/** Kind numbers of the BTF format (btf_type.info bits 24..). */
export const BTF_KIND = {
  UNKN: 0,
  INT: 1,
  PTR: 2,
  ARRAY: 3,
  STRUCT: 4,
  UNION: 5,
  ENUM: 6,
  FWD: 7,
  TYPEDEF: 8,
  VOLATILE: 9,
  CONST: 10,
  RESTRICT: 11,
  FUNC: 12,
  FUNC_PROTO: 13,
  VAR: 14,
  DATASEC: 15,
  FLOAT: 16,
  DECL_TAG: 17,
  TYPE_TAG: 18,
  ENUM64: 19,
} as const;

export type BtfKindName =
  | 'void'
  | 'int'
  | 'ptr'
  | 'array'
  | 'struct'
  | 'union'
  | 'enum'
  | 'fwd'
  | 'typedef'
  | 'volatile'
  | 'const'
  | 'restrict'
  | 'func'
  | 'func_proto'
  | 'var'
  | 'datasec'
  | 'float'
  | 'decl_tag'
  | 'type_tag'
  | 'enum64';

/** Kind names indexed by kind number; index 0 (UNKN) stands for void, which only id 0 has. */
export const KIND_NAMES: readonly BtfKindName[] = [
  'void',
  'int',
  'ptr',
  'array',
  'struct',
  'union',
  'enum',
  'fwd',
  'typedef',
  'volatile',
  'const',
  'restrict',
  'func',
  'func_proto',
  'var',
  'datasec',
  'float',
  'decl_tag',
  'type_tag',
  'enum64',
];

interface Common {
  readonly id: number;
  /** Raw name from the string section ('' when anonymous). */
  readonly name: string;
}

export interface BtfVoid extends Common {
  readonly kind: 'void';
}
export interface BtfInt extends Common {
  readonly kind: 'int';
  readonly size: number;
  readonly signed: boolean;
  readonly char: boolean;
  readonly bool: boolean;
  /** BTF_INT_OFFSET: bit offset of the value inside the storage (old-style bitfields). */
  readonly bitOffset: number;
  readonly bits: number;
}
export interface BtfPtr extends Common {
  readonly kind: 'ptr';
  readonly type: number;
}
export interface BtfArray extends Common {
  readonly kind: 'array';
  readonly type: number;
  readonly indexType: number;
  readonly nelems: number;
}
export interface BtfMember {
  readonly name: string;
  readonly type: number;
  /** Bit offset from the start of the enclosing struct/union. */
  readonly bitOffset: number;
  /** Bitfield width in bits, 0 when the member is not a bitfield (kind_flag encoding only). */
  readonly bitfieldSize: number;
}
export interface BtfComposite extends Common {
  readonly kind: 'struct' | 'union';
  readonly size: number;
  /** kind_flag: member offsets carry the bitfield size in their top 8 bits. */
  readonly kindFlag: boolean;
  readonly members: readonly BtfMember[];
}
export interface BtfEnumValue {
  readonly name: string;
  readonly value: bigint;
}
export interface BtfEnum extends Common {
  readonly kind: 'enum' | 'enum64';
  readonly size: number;
  readonly signed: boolean;
  readonly values: readonly BtfEnumValue[];
}
export interface BtfFwd extends Common {
  readonly kind: 'fwd';
  /** kind_flag: forward declaration of a union rather than a struct. */
  readonly union: boolean;
}
export interface BtfRef extends Common {
  readonly kind: 'typedef' | 'volatile' | 'const' | 'restrict' | 'type_tag';
  readonly type: number;
}
export interface BtfFunc extends Common {
  readonly kind: 'func';
  /** A FUNC_PROTO id. */
  readonly type: number;
  /** 0 static, 1 global, 2 extern. */
  readonly linkage: number;
}
export interface BtfParam {
  readonly name: string;
  readonly type: number;
}
export interface BtfFuncProto extends Common {
  readonly kind: 'func_proto';
  readonly returnType: number;
  /** Parameters without the trailing varargs marker. */
  readonly params: readonly BtfParam[];
  readonly variadic: boolean;
}
export interface BtfVar extends Common {
  readonly kind: 'var';
  readonly type: number;
  readonly linkage: number;
}
export interface BtfVarSecinfo {
  readonly type: number;
  readonly offset: number;
  readonly size: number;
}
export interface BtfDatasec extends Common {
  readonly kind: 'datasec';
  readonly size: number;
  readonly vars: readonly BtfVarSecinfo[];
}
export interface BtfFloat extends Common {
  readonly kind: 'float';
  readonly size: number;
}
export interface BtfDeclTag extends Common {
  readonly kind: 'decl_tag';
  readonly type: number;
  /** -1: the tag applies to the type itself; otherwise the member or parameter index. */
  readonly componentIdx: number;
}

export type BtfType =
  | BtfVoid
  | BtfInt
  | BtfPtr
  | BtfArray
  | BtfComposite
  | BtfEnum
  | BtfFwd
  | BtfRef
  | BtfFunc
  | BtfFuncProto
  | BtfVar
  | BtfDatasec
  | BtfFloat
  | BtfDeclTag;
